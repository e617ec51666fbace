"""Reading DMARC reports and, later, naming the services behind them.

Pure: bytes and records in, values out. No storage, no Graph, no Azure Functions here.
"""

from analysis.errors import CorruptInput, LimitExceeded, NotAReport, RejectedInput, UnsafeXml
from analysis.limits import Limits
from analysis.model import (
    AggregateReport,
    DkimResult,
    FailureReport,
    PolicyPublished,
    Reason,
    Record,
    Report,
    Reporter,
    SpfResult,
    TlsFailureDetail,
    TlsPolicy,
    TlsReport,
)
from analysis.reader import iter_files, read_reports

__all__ = [
    "AggregateReport",
    "CorruptInput",
    "DkimResult",
    "FailureReport",
    "LimitExceeded",
    "Limits",
    "NotAReport",
    "PolicyPublished",
    "Reason",
    "Record",
    "RejectedInput",
    "Report",
    "Reporter",
    "SpfResult",
    "TlsFailureDetail",
    "TlsPolicy",
    "TlsReport",
    "UnsafeXml",
    "iter_files",
    "read_reports",
]
