// @generated automatically by Diesel CLI.

diesel::table! {
    use diesel::sql_types::{Bigint, Blob, Bool, Integer, Nullable, Text, Varchar};
    use crate::schema_types::Datetime;

    applies (id) {
        id -> Bigint,
        #[max_length = 255]
        apply_identifier -> Varchar,
        #[max_length = 255]
        database_name -> Varchar,
        #[max_length = 255]
        environment -> Varchar,
        #[max_length = 255]
        deployment -> Varchar,
        #[max_length = 64]
        state -> Varchar,
        error_message -> Nullable<Text>,
        created_at -> Datetime,
        updated_at -> Datetime,
        started_at -> Nullable<Datetime>,
        completed_at -> Nullable<Datetime>,
        defer_cutover -> Bool,
        max_concurrency -> Nullable<Bigint>,
        max_attempts -> Integer,
        #[max_length = 255]
        requested_by -> Varchar,
        failure_seq -> Bigint,
    }
}

diesel::table! {
    use diesel::sql_types::{Bigint, Blob, Bool, Integer, Nullable, Text, Varchar};
    use crate::schema_types::Datetime;

    apply_control_requests (id) {
        id -> Bigint,
        apply_id -> Bigint,
        apply_operation_id -> Nullable<Bigint>,
        #[max_length = 16]
        kind -> Varchar,
        #[max_length = 16]
        status -> Varchar,
        reason -> Nullable<Text>,
        created_at -> Datetime,
        updated_at -> Datetime,
        completed_at -> Nullable<Datetime>,
        pending_scope -> Nullable<Bigint>,
        #[max_length = 255]
        requested_by -> Varchar,
        releases_through -> Nullable<Bigint>,
        result -> Nullable<Text>,
    }
}

diesel::table! {
    use diesel::sql_types::{Bigint, Blob, Bool, Integer, Nullable, Text, Varchar};
    use crate::schema_types::Datetime;

    apply_operations (id) {
        id -> Bigint,
        apply_id -> Bigint,
        #[max_length = 255]
        deployment -> Varchar,
        #[max_length = 255]
        target -> Varchar,
        #[max_length = 64]
        state -> Varchar,
        error_message -> Nullable<Text>,
        started_at -> Nullable<Datetime>,
        completed_at -> Nullable<Datetime>,
        created_at -> Datetime,
        updated_at -> Datetime,
        #[max_length = 32]
        cutover_policy -> Varchar,
        #[max_length = 32]
        on_failure -> Varchar,
        attempt -> Integer,
        #[max_length = 255]
        lease_owner -> Varchar,
        #[max_length = 64]
        lease_token -> Varchar,
        lease_acquired_at -> Nullable<Datetime>,
        lease_expires_at -> Nullable<Datetime>,
        #[max_length = 255]
        database_name -> Varchar,
        #[max_length = 255]
        environment -> Varchar,
        holds_target -> Nullable<Bool>,
        engine_state -> Nullable<Blob>,
        #[max_length = 255]
        external_id -> Nullable<Varchar>,
        failure_seq -> Nullable<Bigint>,
        claimable -> Nullable<Bool>,
        #[max_length = 16]
        copy_claim -> Nullable<Varchar>,
        #[max_length = 16]
        cutover_claim -> Nullable<Varchar>,
        copy_walk -> Nullable<Bool>,
        cutover_walk -> Nullable<Bool>,
    }
}

diesel::table! {
    use diesel::sql_types::{Bigint, Blob, Bool, Integer, Nullable, Text, Varchar};
    use crate::schema_types::Datetime;

    tasks (id) {
        id -> Bigint,
        apply_id -> Bigint,
        apply_operation_id -> Nullable<Bigint>,
        #[max_length = 255]
        table_name -> Varchar,
        ddl -> Text,
        #[max_length = 64]
        state -> Varchar,
        error_message -> Nullable<Text>,
        created_at -> Datetime,
        updated_at -> Datetime,
        started_at -> Nullable<Datetime>,
        completed_at -> Nullable<Datetime>,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    applies,
    apply_control_requests,
    apply_operations,
    tasks,
);
