"""Reports: reading results (never writing them) and presenting them."""
