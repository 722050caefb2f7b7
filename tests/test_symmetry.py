"""Chapter 3's experiment: the decoder sees the class, the augmentations never read the fine label,
scores are computed on normalised embeddings, and the raw-input reference is k-means + AMI as sklearn has it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spreadcon.theory import symmetry as S
from spreadcon.theory.model import SubclassData, make_subclass_data


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(seed=0, **kw):
    args = dict(K=2, m=3, n_per_subclass=20, dim=8, subclass_separation=3.0, seed=seed)
    args.update(kw)
    return make_subclass_data(**args)


def test_autoencoder_terms_are_the_packages_ce_plus_reconstruction_from_z():
    """The one autoencoder: CE of a linear head on z plus the MSE of g(z) against each view; g never sees y."""
    torch.manual_seed(0)
    ae = S.Autoencoder(4, 3, 6).requires_grad_(False)
    z, views = torch.randn(5, 2, 4), torch.randn(5, 2, 6)
    y = torch.tensor([0, 1, 2, 0, 1])
    want_ce = sum(-torch.log_softmax(ae.head(z[i, v]), 0)[y[i]] for i in range(5) for v in range(2)) / 10
    want_rec = sum(((ae.decoder(z[i, v]) - views[i, v]) ** 2).sum() for i in range(5) for v in range(2)) / 60
    got = ae.terms(z, views, y, ce_weight=0.3, recon_weight=2.0)
    assert float(got) == pytest.approx(float(0.3 * want_ce + 2.0 * want_rec), rel=1e-6)
    assert ae.decoder[0].in_features == 4  # the decoder's input is z alone
    # the class changes the CE term only
    assert float(ae.terms(z, views, y, ce_weight=0.0)) == pytest.approx(float(ae.terms(z, views, 2 - y, ce_weight=0.0)))


def test_raw_input_ami_equals_sklearn():
    """Per-class KMeans(k = subclasses, n_init=3, random_state=seed) on raw x, AMI averaged over classes."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score

    d = _data(seed=4, subclass_separation=2.0)
    want = []
    for c in range(2):
        m = (d.coarse == c).numpy()
        pred = KMeans(n_clusters=3, n_init=3, random_state=7).fit_predict(d.x.numpy()[m].astype(np.float64))
        want.append(adjusted_mutual_info_score(d.fine.numpy()[m], pred))
    assert S.raw_input_ami(d, seed=7) == pytest.approx(float(np.mean(want)), abs=1e-12)
    # and it measures something: well separated subclasses are found, unseparated ones are not
    assert S.raw_input_ami(_data(subclass_separation=10.0)) > 0.95
    assert S.raw_input_ami(_data(subclass_separation=0.0, n_per_subclass=60)) < 0.1


@pytest.mark.parametrize("setting", ["baseline", "noise", "mask", "autoencoder", "linear"])
def test_realistic_settings_never_read_the_fine_label(setting):
    """Shuffling the fine labels leaves the training run bit-identical; the oracle's run changes."""
    d = _data()
    shuffled = SubclassData(d.x, d.coarse, d.fine[torch.randperm(len(d.fine), generator=torch.Generator().manual_seed(1))],
                            d.centres, d.noise, d.class_centres)
    a = S.train_setting(d, setting, steps=5, batch_size=16, out_dim=4, seed=3)
    b = S.train_setting(shuffled, setting, steps=5, batch_size=16, out_dim=4, seed=3)
    with torch.no_grad():
        assert torch.equal(a(d.x), b(d.x))


def test_oracle_reads_the_fine_label():
    d = _data()
    shuffled = SubclassData(d.x, d.coarse, d.fine.flip(0), d.centres, d.noise, d.class_centres)
    a = S.train_setting(d, "oracle", steps=5, batch_size=16, out_dim=4, seed=3)
    b = S.train_setting(shuffled, "oracle", steps=5, batch_size=16, out_dim=4, seed=3)
    with torch.no_grad():
        assert not torch.allclose(a(d.x), b(d.x))
    assert S.UPPER_BOUNDS == ("oracle",)


def test_noise_and_mask_views_have_the_stated_law():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 50, generator=g)
    v = S.noise_views(x, 0.7, views=3, generator=g)
    assert v.shape == (400, 3, 50)
    assert float((v - x[:, None]).std()) == pytest.approx(0.7, rel=0.02)
    assert float((v[:, 0] - v[:, 1]).mean()) == pytest.approx(0.0, abs=0.01)  # the views differ independently
    m = S.mask_views(torch.ones(400, 50), 0.3, generator=g)
    assert float((m == 0).float().mean()) == pytest.approx(0.3, abs=0.01)
    assert float(m.mean()) == pytest.approx(1.0, abs=0.02)  # rescaled: the mean input is kept
    with pytest.raises(ValueError, match="drop"):
        S.mask_views(x, 1.0)
    with pytest.raises(ValueError, match="std"):
        S.noise_views(x, -1.0)


def test_scores_are_on_the_normalised_embeddings():
    """Rescaling each embedding by a positive factor changes nothing; the AMI of clustered embeddings is 1."""
    d = _data(subclass_separation=6.0, noise=0.2)
    tr, te = d.split(0.5, torch.Generator().manual_seed(0))
    ztr, zte = tr.x + 0.0, te.x + 0.0
    scale = lambda z: z * torch.rand(len(z), 1, generator=torch.Generator().manual_seed(2)).add(0.1) * 10  # noqa: E731
    a = S.embedding_scores(ztr, tr, zte, te)
    b = S.embedding_scores(scale(ztr), tr, scale(zte), te)
    assert a == pytest.approx(b, abs=1e-6)
    assert a["ami"] > 0.95 and a["coarse_acc"] == 1.0 and a["within_cosine"] > a["between_cosine"]


def test_run_study_records_curves_per_seed():
    cfg = S.StudyConfig(settings=("baseline", "noise"), seeds=(0, 1), n_per_subclass=10, dim=8, steps=6, eval_every=4)
    st = S.run_study(cfg)
    assert st.steps.tolist() == [0, 4, 6]
    assert st.curves["noise"]["ami"].shape == (2, 3) and st.raw_ami.shape == (2,)
    mean, sd = st.final("baseline", "coarse_acc")
    assert 0 <= mean <= 1 and sd >= 0
    with pytest.raises(ValueError, match="settings"):
        S.run_study(S.StudyConfig(settings=("dropout",)))
    with pytest.raises(ValueError, match="setting"):
        S.train_setting(_data(), "dropout", steps=1)


def _study_by_the_old_loop(cfg):
    """The study as the first edition computed it: one process, seeds then settings, in order."""
    curves = {}
    for seed in cfg.seeds:
        data = make_subclass_data(K=cfg.K, m=cfg.m, n_per_subclass=cfg.n_per_subclass, dim=cfg.dim,
                                  subclass_separation=cfg.separation, seed=seed)
        tr, te = data.split(0.5, torch.Generator().manual_seed(seed))
        for setting in cfg.settings:
            rows = []

            def on_eval(step, enc, tr=tr, te=te, rows=rows, seed=seed):
                with torch.no_grad():
                    rows.append(S.embedding_scores(enc(tr.x), tr, enc(te.x), te, seed=seed))

            S.train_setting(tr, setting, alpha=cfg.alpha, temperature=cfg.temperature, steps=cfg.steps,
                            batch_size=cfg.batch, noise_std=cfg.noise_std, mask_drop=cfg.mask_drop,
                            recon_weight=cfg.recon_weight, seed=seed, eval_every=cfg.eval_every, on_eval=on_eval)
            for k in rows[0]:
                curves.setdefault(setting, {}).setdefault(k, []).append([r[k] for r in rows])
    return {s: {k: np.array(v) for k, v in d.items()} for s, d in curves.items()}


def test_the_study_in_worker_processes_equals_the_serial_loop_bit_for_bit():
    """Chapter 3 shares the study's runs among processes: every curve must be exactly the serial loop's."""
    cfg = S.StudyConfig(settings=("baseline", "autoencoder", "noise"), seeds=(0, 1), n_per_subclass=12, dim=8,
                        steps=30, eval_every=10, batch=32)
    reference = _study_by_the_old_loop(cfg)
    for workers in (1, 2):
        st = S.run_study(cfg, workers=workers)
        assert set(st.curves) == set(reference)
        for s in reference:
            for k, v in reference[s].items():
                np.testing.assert_array_equal(st.curves[s][k], v, err_msg=f"{s} {k}, {workers} workers")


def test_sweep_weights_put_the_optimum_where_the_rule_says():
    """Each chosen alpha's rho* (checked by a brute-force grid over the symmetric loss) is its target."""
    from spreadcon.theory import model as T

    cells = S.sweep_cells(48, 2, 0.5)
    grid = np.linspace(-1 / 47, 1, 200001)
    for c in cells:
        form = {"l_out": "l_out", "official": "one_positive_clamped"}[c.form]
        brute = grid[np.argmin(T.symmetric_loss(grid, c.alpha, 48, 2, 0.5, form=form))]
        assert brute == pytest.approx(c.rho_star, abs=1e-4)
        target = float(c.why.split("rho* = ")[1].split(" ")[0]) if "rho*" in c.why else None
        if target is not None:
            assert brute == pytest.approx(target, abs=0.01)
        assert -1 / 47 + 0.05 < c.rho_star < 0.95 or c.alpha == 0.5  # interior, except the default weight
    assert {(c.form, c.alpha) for c in cells} >= {("l_out", 0.5), ("official", 0.5)}


def test_official_form_trains_a_different_encoder():
    d = _data()
    a = S.train_setting(d, "baseline", steps=5, batch_size=16, out_dim=4, seed=3)
    b = S.train_setting(d, "baseline", steps=5, batch_size=16, out_dim=4, seed=3, form="official")
    with torch.no_grad():
        assert not torch.allclose(a(d.x), b(d.x))
    with pytest.raises(ValueError, match="form"):
        S.train_setting(d, "baseline", steps=1, form="paper")


def test_sweep_record_round_trips_and_damage_is_named(tmp_path):
    import json

    cfg = S.StudyConfig(settings=("baseline", "noise"), seeds=(0, 1), n_per_subclass=10, dim=8, steps=4, eval_every=2)
    cells = [S.Cell("l_out", 0.5, 0.02, "default"), S.Cell("official", 0.3, 0.7, "x")]
    studies = S.run_studies([cfg, S.replace(cfg, form="official", alpha=0.3)])
    rec = S.study_record(studies, cells, started_at="2025-01-01T00:00:00+00:00", wall_time_s=1.5, workers=1)
    path = tmp_path / "sweep.json"
    S.write_record(rec, path)
    prov, cells2, back = S.load_record(path)
    assert cells2 == cells and prov["wall_time_s"] == 1.5 and back[1].config == studies[1].config
    assert np.array_equal(back[0].curves["noise"]["ami"], studies[0].curves["noise"]["ami"])
    assert np.array_equal(back[1].raw_ami, studies[1].raw_ami)

    def damaged(edit, match):
        r = json.loads(path.read_text())
        edit(r)
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(r))
        with pytest.raises(S.RecordError, match=match) as e:
            S.load_record(bad)
        assert str(bad) in str(e.value)

    damaged(lambda r: r["provenance"].pop("git_commit"), "git_commit")
    damaged(lambda r: r["studies"][0]["curves"]["noise"]["ami"][0].pop(), "ami")
    damaged(lambda r: r["studies"][0]["curves"]["noise"]["fine_acc"][0].__setitem__(0, 1.5), "outside")
    damaged(lambda r: r["studies"][1]["config"].__setitem__("form", "paper"), "config")
    damaged(lambda r: r["cells"][1].__setitem__("alpha", 0.4), "cells")
    damaged(lambda r: r.__setitem__("extra", 1), "keys")
    (tmp_path / "nan.json").write_text(path.read_text().replace('"wall_time_s": 1.5', '"wall_time_s": NaN'))
    with pytest.raises(S.RecordError, match="strict JSON"):
        S.load_record(tmp_path / "nan.json")
    (tmp_path / "cut.json").write_text(path.read_text()[:100])
    with pytest.raises(S.RecordError, match="cut.json"):
        S.load_record(tmp_path / "cut.json")
