"""kstructs: the Linux process-events connector ABI in ctypes.

Constants and layouts of ``<linux/netlink.h>``, ``<linux/connector.h>`` and
``<linux/cn_proc.h>``, under their kernel names.
"""

from kstructs import cn_proc, connector, netlink
from kstructs.cn_proc import *  # noqa: F403
from kstructs.connector import *  # noqa: F403
from kstructs.netlink import *  # noqa: F403

__all__ = ["cn_proc", "connector", "netlink"]
__all__ += netlink.__all__
__all__ += connector.__all__
__all__ += cn_proc.__all__
