from ._ep import ClassicEP as ClassicEP, HolomorphicEP as HolomorphicEP, SymmetricEP as SymmetricEP
from ._oscillating import OscillatingEP as OscillatingEP
from ._reference import (
    BPTT as BPTT,
    ImplicitDifferentiation as ImplicitDifferentiation,
    RecurrentBackprop as RecurrentBackprop,
)
