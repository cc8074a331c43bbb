//! Segment object format v1 (written by the segment module owner).
