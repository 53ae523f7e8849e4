"""The HTTP drop-in path: route, forward to the primary, stream its answer, shadow a copy."""
