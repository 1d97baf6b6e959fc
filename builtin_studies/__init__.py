"""Our six studies, each a study file written with the public API (``study.api``), exactly as
a user writes theirs (docs/writing-a-study.md): the built-in studies are its first users.
``mnist`` holds what they share; ``study.registry`` collects the studies of ``BUILTIN``."""

BUILTIN = ("ablation_pretraining", "ablation_dropout", "ablation_optimizer", "ablation_noise", "even_odd",
           "cnn_sweep")
