"""The papers' claims at reduced scale (issue 16), one module per claim; `launch/reproduce.py` runs them."""
