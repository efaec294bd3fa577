"""Experiments that decide the paper's claims: one fair protocol, two tasks.

    protocol.py   arms, learning-rate search on validation, paired seeds, run folders reused only on an
                  exact config match, worker processes (JSON in, JSON out)
    stats.py      paired differences, 95% confidence intervals, verdicts
    report.py     tables and figures (forest plot of paired differences, validation curves)
    nlu.py        movie-review sentiment on MiniLM: `python3 -m tinymix compare --regime small|full`
    e2e.py        the e2e data-to-text task on the tiny GPT: `python3 -m tinymix compare --task e2e`
"""
