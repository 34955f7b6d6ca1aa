-- Reserved: the number of a migration developed alongside (it replaces this file).
SELECT 1;
