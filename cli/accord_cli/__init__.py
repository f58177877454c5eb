"""`accord`: the command line of departments and auditors."""
