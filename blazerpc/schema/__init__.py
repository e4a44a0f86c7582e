"""The definition layer: a decorated function becomes one schema model (`ServiceSpec`).

Every other layer reads this model and nothing else; it imports no codec and no network
library. Wire names are made in `naming` only.
"""
