"""View functions, one module per resource; `api/routes.py` maps URLs onto them."""
