"""People (card holders): staff, students, visitors, elderly riders, ..."""
