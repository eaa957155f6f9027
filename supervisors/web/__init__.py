"""The operator's web surface: the dashboard at ``/``, status, events, metrics, health and
control endpoints, on Starlette (:mod:`supervisors.web.server`)."""
