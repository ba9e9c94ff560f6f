"""Secrets never in a log line: kept here for the providers written against it; the
filter, the masking function and the loggers covered live in `cascade_notify._logmask`."""

from cascade_notify._logmask import (
    MASKED_LOGGERS,
    TOKEN_FILTER,
    TokenFilter,
    install_token_filter,
)

__all__ = ["MASKED_LOGGERS", "TOKEN_FILTER", "TokenFilter", "install_token_filter"]
