DROP TABLE applies;
