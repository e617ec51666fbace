"""DNS record grammars, one module each (DMARC, DKIM keys, MTA-STS, TLS-RPT, BIMI): pure parsers
that turn published text into values and findings. DNS lookups stay in `analysis.dnsevidence`;
the posture (`analysis.posture`) joins the two.
"""
