"""An example gradattn-bench plugin: one model, one dataset."""
