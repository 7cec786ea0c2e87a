DROP TABLE IF EXISTS apply_control_requests;
