"""Preference records and the files that hold them."""
from fgalign.data.records import PreferenceRecord, ReadStats
from fgalign.data.io import read_records, write_records

__all__ = ["PreferenceRecord", "ReadStats", "read_records", "write_records"]
