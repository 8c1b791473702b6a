"""What runs before the virtual environment exists, on whatever ``python3`` the machine has.

Standard library only, in syntax that old Pythons still parse, so that it can say what is wrong.
"""
