"""MIMIC-IV (v2.2+) and MIMIC-CXR: schema checks, cohort, EHR tensors, labels, chest X-ray pairing."""
