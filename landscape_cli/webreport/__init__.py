"""`landscape report`: one self-contained interactive HTML page for runs, checkpoints' results and comparisons
(Plotly's JavaScript embedded; the optional extra `[report]`)."""
