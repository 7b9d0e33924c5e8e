"""The HTTP side: the FastAPI app, JSON errors, body limits, health and metrics."""
