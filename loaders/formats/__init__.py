"""Statement format parsers. Importing this package registers every format in ``loaders.base.FORMATS``."""
from loaders.formats import alipay, bank, generic, intl, unionpay, wechat  # noqa: F401
