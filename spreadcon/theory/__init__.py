"""The theory chapters' models: the symmetric model and ρ*(α), free embeddings, synthetic subclasses, the symmetry experiments."""

from spreadcon.theory.model import (  # noqa: F401
    FORMS, rho_bounds, between_class_cosine, symmetric_gram, symmetric_embedding, spread_loss_for_form,
    symmetric_terms, symmetric_loss, symmetric_loss_grad, alpha_of_rho, rho_star, Thresholds,
    thresholds, symmetric_loss_hess, gram_eigenvalues, ViewCosines, two_view_eigenvalues, two_view_gram,
    two_view_embedding, two_view_loss, exchangeable_sigma, exchangeable_eigenvalues, exchangeable_gram,
    exchangeable_loss, ExchangeableMinimum, exchangeable_minimum, exchangeable_views, optimise_free_embeddings,
    class_cosines, Separation, separation, same_spread_pair, within_class_permutation, SubclassData,
    make_subclass_data, MECHANISMS, mlp, subclass_recovery,
)
