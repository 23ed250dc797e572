"""Keeping what the robot saw safely, and sending the most valuable first under a downlink budget."""  # noqa: E501
