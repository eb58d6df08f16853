"""Model providers behind one small interface, listed in an explicit registry."""
