"""s4s-jupyter: imaging research over SMART on FHIR and DICOMweb from JupyterLab.

Importing this package is cheap: the kit's pieces are imported when first used.
"""

__version__ = "0.1.0"
