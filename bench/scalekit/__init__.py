"""Parts of ``bench/scale.py`` (the operator at fleet scale)."""
