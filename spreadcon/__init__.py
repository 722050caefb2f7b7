"""spreadcon: class collapse, spread and Thanos (Chen et al., ICML 2022).

`import spreadcon` needs only torch and numpy. Submodules that need plotting,
scikit-learn or papermill import those where they are used.
"""

__version__ = "0.1.0"
