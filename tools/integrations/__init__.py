"""Adapters to other systems: :mod:`tools.integrations.monailabel_app` (the MONAI Label app that ``python -m tools
serve`` runs) and :mod:`tools.integrations.torchvision_ops` (the torchvision operators MONAI Label's import needs on a
torch without torchvision's C++ extension). Imported only by those systems and by ``tools serve``, never by a bundle's
configs."""
