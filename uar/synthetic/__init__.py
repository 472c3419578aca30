"""Synthetic chest radiographs with known findings, their reports and DICOM studies (numpy only).

One idea per module; a module imports only modules of lower layers (``tests/app/test_import_graph.py``):

====  =====================================================================================
0     ``case`` (Case, its parts and labels; Region: where a finding is drawn), ``jpeg_lossless``
1     ``sampling`` (sample_case: the prevalence design), ``raster`` (image tools, Canvas),
      ``report`` (compose_report: the report composer)
2     ``anatomy`` (lung geometry, zones, vessel trees, heart and finding centres)
3     ``frontal``, ``lateral`` (attenuation maps), ``regions`` (finding_regions)
4     ``render`` (render(case, view): exposure, noise, collimation)
5     ``dicom`` (write_study: a two-series CR / DX study)
6     ``dataset`` (write_dataset: the R2Gen layout of ``uar data synthetic``)
====  =====================================================================================

Import the modules directly (``from uar.synthetic.render import render``); this package imports
nothing itself. See docs/synthetic-data.md.
"""
