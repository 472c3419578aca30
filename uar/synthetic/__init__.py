"""Synthetic chest radiographs with known findings, their reports and DICOM studies (numpy only).

One idea per module; imports run one way, from the case model up to the dataset writer::

    case           Case, its parts and labels, Region (where a finding is drawn)
      sampling     sample_case: the prevalence design
      raster       numpy image tools and the Canvas (anatomy -> pixel mapping)
      anatomy      lung geometry, zones, vessel trees
        frontal    attenuation map of the frontal view
        lateral    attenuation map of the lateral view
        regions    finding_regions: each finding's drawn region per view, in pixels
          render   render(case, view): exposure, noise, collimation
      report       compose_report: findings reports from real sentences (SentenceBank)
      jpeg_lossless  JPEG Lossless SV1 encoder
            dicom  write_study: a two-series CR / DX study
              dataset  write_dataset: the R2Gen layout (``uar data synthetic``)

Import the modules directly (``from uar.synthetic.render import render``); this package imports
nothing itself. See docs/synthetic-data.md.
"""
