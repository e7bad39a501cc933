"""ADNI: ADNIMERGE tabular features, T1 MRI volumes and AD/MCI/CN labels."""
