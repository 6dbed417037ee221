"""Plain-object helpers both the API server and the clients use (the ground floor)."""
