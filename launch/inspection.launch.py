"""Launch the inspection graph for one platform: ros2 launch vad_inspection inspection.launch.py.

Thin on purpose: which nodes run, with which remaps and parameters, is described once in the
package (shared with the ROS-free launcher); this file only chooses the platform's parameter file.
The nodes themselves land with the transport and node issues; until then the launch resolves the
parameter file and says that no node is registered yet, instead of pretending to run one.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def generate_launch_description() -> LaunchDescription:
    platform = LaunchConfiguration("platform")
    params = PathJoinSubstitution(
        [FindPackageShare("vad_inspection"), "config", [platform, ".yaml"]]
    )
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "platform",
                default_value="agv",
                choices=["uav", "agv", "arm"],
                description="robot platform whose parameter file (config/<platform>.yaml) is used",
            ),
            LogInfo(msg=["vad_inspection: parameters from ", params]),
            LogInfo(msg="vad_inspection: no node is registered in this version of the package"),
        ]
    )
