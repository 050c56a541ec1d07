"""An example dmlopt plugin: a loss, a trunk and a dataset of one's own."""
