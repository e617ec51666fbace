"""Microsoft cloud I/O: tokens, the shared mailbox, the SharePoint list, Teams."""
