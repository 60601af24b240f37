"""The audit checks, one module per family. Importing a module registers its checks.

=================  =============================================================
module             what its checks look at
=================  =============================================================
``policy``         the policy file itself (no AWS calls)
``infra``          tables and their settings, per region (describe/list calls)
``data``           the items: where each pinned item is stored, PII in global
                   tables, the directory (parallel streaming scans or exports)
``operations``     the conflict log and the drill history
``subjects``       erased data subjects: nothing left behind, nothing back
=================  =============================================================
"""
