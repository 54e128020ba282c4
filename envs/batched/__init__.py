"""The batched vector envs, by their former home: each now lives with its task (``envs.corridor``,
``envs.portal``, ``envs.instruction``, ``envs.tmaze``), made from the task's own rules by
``envs.vector.TaskVectorEnv``."""

from envs.corridor import CorridorVectorEnv
from envs.instruction import InstructionVectorEnv
from envs.portal import PortalVectorEnv
from envs.tmaze import TMazeVectorEnv

__all__ = ["CorridorVectorEnv", "InstructionVectorEnv", "PortalVectorEnv", "TMazeVectorEnv"]
