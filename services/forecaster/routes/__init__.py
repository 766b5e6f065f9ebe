"""The forecaster's HTTP routes, one module per resource."""
