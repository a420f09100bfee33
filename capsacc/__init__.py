"""capsacc: the CapsAcc cost model (cycles, latency, energy, memory, area) of NASCaps networks.

Imports none of the other nascaps packages.
"""

from capsacc.accelerator import Accelerator
from capsacc.errors import AcceleratorConfigError, GenotypeFormatError, InputError
from capsacc.model import (MODEL_VERSION, BatchEstimate, Estimate, GenotypeBatch, OperationBatch, OperationCost,
                           estimate, estimate_many)
from capsacc.network import OP_KINDS, PRESETS, Network, Operation

__all__ = ["Accelerator", "AcceleratorConfigError", "GenotypeFormatError", "InputError", "MODEL_VERSION",
           "BatchEstimate", "Estimate", "GenotypeBatch", "OperationBatch", "OperationCost", "estimate", "estimate_many",
           "OP_KINDS", "PRESETS", "Network", "Operation"]
