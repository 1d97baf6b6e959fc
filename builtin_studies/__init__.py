"""Our studies, each a study file written with the public API (``study.api``), exactly as a user
writes theirs (docs/writing-a-study.md): the built-in studies are its first users. ``mnist``
holds what they share; ``study.registry`` loads every study file of this folder by path."""
