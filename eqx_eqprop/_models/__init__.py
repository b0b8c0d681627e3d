from ._base import AbstractEnergyModel as AbstractEnergyModel
from ._mlp import EnergyMLP as EnergyMLP
