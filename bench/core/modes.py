"""The two preprocessing modes (protocol section 7): the protocol's corrected pipeline, or the original
notebooks' own, kept to reproduce their printed figures."""

PREPROCESSING_MODES = ("protocol", "notebook")
