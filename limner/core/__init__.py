"""The canonical request/result model, sizes, styles, errors and the service that runs one request."""
