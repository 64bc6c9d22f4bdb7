"""Built-in task environments, one small file each; importing this package registers them.

rlenv imports it lazily, the first time the registry is read (``rlenv.make``, ``rlenv.envs``).
"""

from . import arithmetic  # noqa: F401  (registers arithmetic-v0)
from . import countdown  # noqa: F401  (registers countdown-v0)
from . import gsm8k  # noqa: F401  (registers gsm8k-v0)
from . import math  # noqa: F401  (registers math-v0)
from . import code  # noqa: F401  (registers code-v0)
from . import code_feedback  # noqa: F401  (registers code-feedback-v0)
from . import instructions  # noqa: F401  (registers instructions-v0)
from . import preference  # noqa: F401  (registers preference-v0)
from . import reasoning_gym  # noqa: F401  (registers rg/<name>-v0 for reasoning-gym's data sets, when installed)
from . import dataset  # noqa: F401  (registers dataset-v0: any local/hub data set with a column mapping)
