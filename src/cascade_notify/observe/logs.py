"""What the library's log lines carry and hide (docs/logging.md): the structured
fields in `extra`, the one address-masking function, and the filter that keeps secrets
and full addresses out of a record, for a logger of your own."""

from cascade_notify._logfields import FIELDS
from cascade_notify._logmask import SECRET_FILTER, SecretFilter, mask_address

__all__ = ["FIELDS", "SECRET_FILTER", "SecretFilter", "mask_address"]
