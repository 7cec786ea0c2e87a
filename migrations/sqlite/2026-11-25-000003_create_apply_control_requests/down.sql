DROP TABLE apply_control_requests;
