"""What the forecaster's actors and workflows share, below them and above
the domain (`intraday/`): the Dapr sidecar client (`sidecar`), the model
catalog (`models`), the weather input (`weather`), the fleet list
(`fleet_list`), the audit store's pool (`audit_pool`), metrics, tracing and
secrets. Nothing here imports `services/`, `actors/` or `workflows/`
(tests/unit/test_layers.py)."""
