"""The one exception type the CLI turns into a clean error message and a non-zero exit."""


class ClipmergeError(Exception):
    """A problem with the user's input (a file, a key, a tensor) that the message names."""
