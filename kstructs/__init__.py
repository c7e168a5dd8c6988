"""kstructs: the Linux process-events connector ABI in ctypes.

Constants and layouts of ``<linux/netlink.h>``, ``<linux/connector.h>`` and
``<linux/cn_proc.h>``, under their kernel names.
"""

from kstructs import cn_proc, connector, events, listener, netlink
from kstructs.cn_proc import *  # noqa: F403
from kstructs.connector import *  # noqa: F403
from kstructs.events import *  # noqa: F403
from kstructs.listener import *  # noqa: F403
from kstructs.netlink import *  # noqa: F403

__version__ = "0.1.0"

__all__ = ["__version__", "cn_proc", "connector", "netlink"]
__all__ += netlink.__all__
__all__ += connector.__all__
__all__ += cn_proc.__all__
__all__ += ["events", "listener"]
__all__ += events.__all__
__all__ += listener.__all__
