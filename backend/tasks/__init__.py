"""Background tasks beside the request path: the alert evaluator and the webhook sender."""
