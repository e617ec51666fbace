"""Microsoft cloud I/O: tokens, the shared mailbox, the SharePoint list, Teams. (Issues 4 and 5.)"""
