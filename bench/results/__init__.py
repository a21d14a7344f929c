"""What `bench report` computes: the runs read, the per-dataset rows, the verdict across datasets,
significance, reference figures, the text and the figures."""
